"""Hardware: GPIO door outputs, door inputs, systemd notification — all injected, all mockable."""
