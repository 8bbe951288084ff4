"""Helpers for the Denmark geolocation workbook."""
