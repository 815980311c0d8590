from lkdn.commands.extract_subimages import main

if __name__ == "__main__":
    raise SystemExit(main())
