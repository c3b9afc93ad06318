"""The dashboard's files, served by the API (rtmh.api.dashboard): one page that loads plain ES
modules and a stylesheet from ``assets/``. No build step and no Node.js: what is here is what the
browser runs, shipped inside the Python package so the hub works with no internet."""
