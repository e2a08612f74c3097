"""Organizations: teams with owner, admin and member roles, invitations by email."""
