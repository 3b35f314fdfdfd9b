"""Stream processors: the sharing router (and, later, the hit matcher), on faust-streaming."""
