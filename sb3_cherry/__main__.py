from sb3_cherry.cli import main

if __name__ == "__main__":  # worker processes (async learner, SubprocVecEnv) re-import the main module
    main()
