from microvqa_pp.cli import main

# The guard keeps worker processes started with "spawn" (which import __main__) from running
# the command again.
if __name__ == "__main__":
    main()
