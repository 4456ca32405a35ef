"""What a run is: RunConfig and its key groups (help, choices, limits), value coercion, decoding presets."""
