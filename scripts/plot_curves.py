from lkdn.commands.plot_curves import main

if __name__ == "__main__":
    raise SystemExit(main())
