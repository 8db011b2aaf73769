from onnxtax.cli import main
main()
