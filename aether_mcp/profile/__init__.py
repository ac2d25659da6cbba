"""What a caste runs on: the profile's schema, parsing, model resolution, caste settings and the store."""
