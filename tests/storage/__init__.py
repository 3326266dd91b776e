"""Tests of the storage backends; ``contract`` holds the suite every backend passes."""
