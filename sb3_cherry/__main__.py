from sb3_cherry.cli import main

main()
