from torchrec_transact.ablation.runner import main

if __name__ == "__main__":
    main()
