"""The model routes: listings merged over backends, pulls, deletes and authoring."""
