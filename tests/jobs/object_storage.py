"""What the object storage tests share with conftest.py's fixtures."""

BUCKET = "resumable-tests"  # made by the `s3_server` fixture
