// The preloaded library has no API: its constructor is all (preload.c).
