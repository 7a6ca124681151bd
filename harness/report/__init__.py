"""Reports: the console table and the HTML page, both read from results.json."""
