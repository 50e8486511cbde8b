"""maskgate_train: the workstation recipe that makes the device's mask classifier bundle."""
