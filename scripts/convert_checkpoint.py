from lkdn.commands.convert_checkpoint import main

if __name__ == "__main__":
    raise SystemExit(main())
