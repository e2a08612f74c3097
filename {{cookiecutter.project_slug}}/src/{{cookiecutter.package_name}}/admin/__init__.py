"""The admin panel: SQLAdmin views over the enabled modules' tables, for superusers only."""
