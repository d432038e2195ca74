"""The read-only graphs page that vuegraf serves itself (config key `web`)."""
