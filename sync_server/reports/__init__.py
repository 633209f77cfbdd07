"""A clinic's reports for staff: figures computed with SQL over the projections,
bookings, commerce and payments tables (`figures`), a PDF of them (`pdf`), the
underlying tables as Parquet for analysts (`exports`), the staff routes and the
operator's ``coherency server report`` (`monthly`). See docs/reports.md."""
