from lkdn.commands.compare_images import main

if __name__ == "__main__":
    raise SystemExit(main())
