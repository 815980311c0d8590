from lkdn.commands.inference import main

if __name__ == "__main__":
    raise SystemExit(main())
