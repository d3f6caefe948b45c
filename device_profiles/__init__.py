"""Device profiles shipped with tillsight: one TOML file per device (see tillsight.profiles)."""
