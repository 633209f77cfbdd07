"""Bookings the server decides: the directory, schedules and slots, appointments and
caregiver visits, calendar feeds."""
