from lkdn.commands.export_openvino import main

if __name__ == "__main__":
    raise SystemExit(main())
