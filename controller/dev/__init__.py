"""For this machine, not a cluster: the demo and a local Ray head (`localray`)."""
