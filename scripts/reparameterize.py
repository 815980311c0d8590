from lkdn.commands.reparameterize import main

if __name__ == "__main__":
    raise SystemExit(main())
