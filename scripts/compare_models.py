from lkdn.commands.compare_models import main

if __name__ == "__main__":
    raise SystemExit(main())
