"""Generation: decoding loops, sampling rules and text helpers."""
