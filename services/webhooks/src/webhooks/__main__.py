from webhooks.app import main

main()
