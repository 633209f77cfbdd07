"""Models: wound models an organisation's admin publishes, signed with the server's key,
and the routes devices fetch them from.
"""
