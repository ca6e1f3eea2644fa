"""Where data comes from: downloads, archives, named sets, formats, the offline stdlib set."""
