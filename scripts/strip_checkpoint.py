from lkdn.commands.strip_checkpoint import main

if __name__ == "__main__":
    raise SystemExit(main())
