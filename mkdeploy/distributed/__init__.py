"""Past one machine on Ray: corpus transcription and the teacher's pseudo-labelling with Ray Data, serving
with Ray Serve. The optional ``[ray]`` extra; the core commands never import Ray (only the modules here do,
and only inside the functions that run a job)."""
