from lkdn.commands.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(main())
