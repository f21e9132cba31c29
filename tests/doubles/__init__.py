"""In-process test doubles of the services modelgate talks to."""
