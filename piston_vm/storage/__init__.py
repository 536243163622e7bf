"""The only code that talks to CouchDB: names, the HTTP client, one store per document family."""
