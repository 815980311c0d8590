from lkdn.commands.leaderboard import main

if __name__ == "__main__":
    raise SystemExit(main())
