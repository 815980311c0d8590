from lkdn.commands.create_lmdb import main

if __name__ == "__main__":
    raise SystemExit(main())
