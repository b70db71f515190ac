"""Published results, reproduced end to end by one command (`edgeprune reproduce JOB`)."""
