"""Producers: the synthetic history generator and the replay producer."""
