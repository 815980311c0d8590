from lkdn.commands.export_ncnn import main

if __name__ == "__main__":
    raise SystemExit(main())
