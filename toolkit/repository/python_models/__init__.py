"""Source files of the python-backend models.

``toolkit deploy`` copies them into the repository as ``<model>/1/model.py``. They import
``triton_python_backend_utils`` and run only inside Triton.
"""
