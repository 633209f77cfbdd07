"""Intents the server decides: the mechanism bookings, commerce and payments share."""
