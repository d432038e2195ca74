"""vuegraf: Emporia Vue energy data into your own InfluxDB, SQLite or MQTT."""

__version__ = "2.0.0.dev0"
