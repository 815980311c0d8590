from lkdn.commands.ntire_esr import main

if __name__ == "__main__":
    raise SystemExit(main())
