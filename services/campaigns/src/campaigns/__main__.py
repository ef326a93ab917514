from campaigns.app import main

main()
