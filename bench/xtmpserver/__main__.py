from bench.xtmpserver.run import main

main()
