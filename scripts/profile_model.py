from lkdn.commands.profile_model import main

if __name__ == "__main__":
    raise SystemExit(main())
