"""HTTP entrypoints: the route table and one thin module per resource."""
