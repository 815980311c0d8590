from lkdn.commands.make_lr import main

if __name__ == "__main__":
    raise SystemExit(main())
