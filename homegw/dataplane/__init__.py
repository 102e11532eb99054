"""The IO Module framework: loader, chains, attach, slow path, TEST_RUN."""
