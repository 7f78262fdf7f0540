"""The host side of filtered network access: the address guard and the domain proxy."""
